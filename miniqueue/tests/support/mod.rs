//! Helpers shared by `tests/engine.rs` and `tests/recovery.rs`: the virtual clock's
//! origin, job builders, the server's `stats` read back as a map, and the random
//! operation language both property tests speak.
//!
//! The engine has no clock of its own (every call takes `now`), so the tests start at
//! [`T0`], a realistic wall-clock time, and move it by hand. Nothing here sleeps.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;

use bytes::Bytes;
use miniqueue::engine::{Engine, NewJob};
use miniqueue::job::{ConnId, Nanos, State, NANOS_PER_SEC};
use miniqueue::protocol::{BackoffKind, OP_COUNT};
use miniqueue::retry::RetryPolicy;
use miniqueue::stats::{server_yaml, ServerFacts};
use proptest::prelude::*;

/// The virtual clock's start: 2025-12-01, so deadlines look like real ones (and a
/// deadline is never 0, which the `Release` record reserves for "no deadline").
pub const T0: Nanos = 1_764_590_000 * NANOS_PER_SEC;

pub const fn secs(n: i64) -> Nanos {
    n * NANOS_PER_SEC
}

pub const fn ms(n: i64) -> Nanos {
    n * 1_000_000
}

/// A `put` as the parser would hand it over (TTR already at least a second).
pub fn new_job(pri: u32, delay: Nanos, ttr: Nanos, body: &str) -> NewJob {
    NewJob { pri, delay, ttr: ttr.max(NANOS_PER_SEC), body: Bytes::copy_from_slice(body.as_bytes()), unique: None }
}

/// A `put-unique`.
pub fn unique_job(key: &str, ttl: Nanos, body: &str) -> NewJob {
    NewJob { unique: Some((key.to_owned(), ttl)), ..new_job(0, 0, secs(60), body) }
}

pub fn policy(max_attempts: u32, backoff: BackoffKind, base_ms: u64, cap_ms: u64) -> RetryPolicy {
    RetryPolicy { max_attempts, backoff, base_ms, cap_ms }
}

/// `key: value` lines of a YAML body (the flat maps `stats`, `stats-job` and
/// `stats-tube` are).
pub fn parse_yaml_map(yaml: &str) -> HashMap<String, String> {
    yaml.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// The engine's `stats`, as the server would format it, read back as a map. This is
/// how the tests see what the engine keeps private (its tube count, waiting
/// connections, urgent jobs).
pub fn stats(engine: &Engine) -> HashMap<String, String> {
    let facts = ServerFacts {
        pid: 0,
        version: String::new(),
        started_at: T0,
        max_job_size: 65535,
        wal_file_size: 0,
        draining: false,
        instance_id: String::new(),
        hostname: String::new(),
        os: String::new(),
        platform: String::new(),
        wal_oldest: 0,
        wal_current: 0,
        connections: None,
    };
    parse_yaml_map(&server_yaml(engine, &[0; OP_COUNT], &facts, T0))
}

/// One number from [`stats`].
pub fn stat(engine: &Engine, key: &str) -> u64 {
    let map = stats(engine);
    let value = map.get(key).unwrap_or_else(|| panic!("stats has no {key:?}"));
    value.parse().unwrap_or_else(|_| panic!("stats {key} = {value:?} is not a number"))
}

/// Every job id the engine holds, ascending (`jobs_imaged_before(u64::MAX)` is every
/// job: no image has an LSN that large).
pub fn job_ids(engine: &Engine) -> Vec<u64> {
    let mut ids = engine.jobs_imaged_before(u64::MAX);
    ids.sort_unstable();
    ids
}

/// Jobs reserved by `conn`, ascending.
pub fn reserved_by(engine: &Engine, conn: ConnId) -> Vec<u64> {
    job_ids(engine)
        .into_iter()
        .filter(|&id| matches!(engine.job(id).map(|j| j.state), Some(State::Reserved { by, .. }) if by == conn))
        .collect()
}

// ---- the random operation language ---------------------------------------------------

/// Tubes the property tests use: the default one and two more.
pub const TUBES: [&str; 3] = ["default", "a", "b"];
/// Client connections in the property tests (slots: a disconnected slot reconnects at
/// once, with a new connection id).
pub const SLOTS: usize = 3;

/// How a `reserve` waits.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// `reserve`: forever.
    Forever,
    /// `reserve-with-timeout 0`: answers at once.
    Now,
    /// `reserve-with-timeout <s>`.
    Secs(i32),
}

impl Wait {
    pub fn timeout(self) -> Option<i32> {
        match self {
            Wait::Forever => None,
            Wait::Now => Some(0),
            Wait::Secs(s) => Some(s),
        }
    }
}

/// Which job an operation names. Resolved against the engine at the time the
/// operation runs (see [`Pick::resolve`]), so shrinking keeps sequences meaningful.
#[derive(Debug, Clone, Copy)]
pub struct Pick(pub u16);

impl Pick {
    /// Mostly a job the connection holds, sometimes any job, sometimes one that does
    /// not exist (for the `NOT_FOUND` paths).
    pub fn resolve(self, engine: &Engine, conn: ConnId) -> u64 {
        let all = job_ids(engine);
        let missing = all.last().map_or(1, |&max| max + 1 + u64::from(self.0 % 3));
        let mine = reserved_by(engine, conn);
        match self.0 % 5 {
            0 => missing,
            1 | 2 if !all.is_empty() => all[usize::from(self.0 / 5) % all.len()],
            _ if !mine.is_empty() => mine[usize::from(self.0 / 5) % mine.len()],
            _ if !all.is_empty() => all[usize::from(self.0 / 5) % all.len()],
            _ => missing,
        }
    }
}

/// One step of a random run. `conn` and `tube` index [`SLOTS`] and [`TUBES`].
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        conn: usize,
        pri: u32,
        delay_ms: u32,
        ttr_s: u8,
        body: u8,
    },
    /// `put-unique` with one of a few keys (recovery test only).
    PutUnique {
        conn: usize,
        key: u8,
        ttl_s: u8,
    },
    Use {
        conn: usize,
        tube: usize,
    },
    Watch {
        conn: usize,
        tube: usize,
    },
    Ignore {
        conn: usize,
        tube: usize,
    },
    Reserve {
        conn: usize,
        wait: Wait,
    },
    ReserveJob {
        conn: usize,
        job: Pick,
    },
    Delete {
        conn: usize,
        job: Pick,
    },
    Release {
        conn: usize,
        job: Pick,
        pri: u32,
        delay_ms: u32,
    },
    Bury {
        conn: usize,
        job: Pick,
        pri: u32,
    },
    Touch {
        conn: usize,
        job: Pick,
    },
    Fail {
        conn: usize,
        job: Pick,
    },
    Kick {
        conn: usize,
        bound: u8,
    },
    KickJob {
        job: Pick,
    },
    Pause {
        tube: usize,
        secs: u8,
    },
    Policy {
        tube: usize,
        policy: Option<RetryPolicy>,
    },
    PurgeDead {
        tube: usize,
    },
    /// The client hangs up; the slot reconnects at once.
    Disconnect {
        conn: usize,
    },
    /// Moves the virtual clock, then (usually) runs the timer as the server's timer
    /// task would. Without the tick, later operations run with overdue deadlines, as
    /// commands do in the server between a deadline and the timer task taking the lock.
    Advance {
        ms: u32,
        tick: bool,
    },
    /// Compaction in steps, so other operations can run between them, as they do in
    /// the server between chunks (recovery test only).
    CompactStart,
    CompactChunk {
        jobs: u8,
    },
    CompactFinish,
    /// Close the log, replay it into a fresh engine, compare, and go on with that
    /// engine (recovery test only).
    Restart,
}

fn pri() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..4, Just(1023), Just(1024), Just(u32::MAX)]
}

fn delay_ms() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 1 => 1u32..3000, 1 => 1000u32..8000]
}

fn retry_policy() -> impl Strategy<Value = Option<RetryPolicy>> {
    let kind = prop_oneof![Just(BackoffKind::None), Just(BackoffKind::Exponential), Just(BackoffKind::Polynomial)];
    proptest::option::weighted(0.8, (0u32..4, kind, 0u64..300, 0u64..3000)).prop_map(|p| {
        p.map(|(max_attempts, backoff, base_ms, cap_ms)| RetryPolicy { max_attempts, backoff, base_ms, cap_ms })
    })
}

fn wait() -> impl Strategy<Value = Wait> {
    prop_oneof![2 => Just(Wait::Now), 1 => Just(Wait::Forever), 2 => (1i32..5).prop_map(Wait::Secs)]
}

fn advance() -> impl Strategy<Value = Op> {
    let ms = prop_oneof![0u32..50, 900u32..1100, 0u32..6000];
    (ms, proptest::bool::weighted(0.85)).prop_map(|(ms, tick)| Op::Advance { ms, tick })
}

/// The operations of the engine property test.
pub fn engine_op() -> BoxedStrategy<Op> {
    let conn = 0..SLOTS;
    let tube = 0..TUBES.len();
    let job = any::<u16>().prop_map(Pick);
    prop_oneof![
        6 => (conn.clone(), pri(), delay_ms(), 1u8..5, any::<u8>())
            .prop_map(|(conn, pri, delay_ms, ttr_s, body)| Op::Put { conn, pri, delay_ms, ttr_s, body }),
        2 => (conn.clone(), tube.clone()).prop_map(|(conn, tube)| Op::Use { conn, tube }),
        2 => (conn.clone(), tube.clone()).prop_map(|(conn, tube)| Op::Watch { conn, tube }),
        1 => (conn.clone(), tube.clone()).prop_map(|(conn, tube)| Op::Ignore { conn, tube }),
        6 => (conn.clone(), wait()).prop_map(|(conn, wait)| Op::Reserve { conn, wait }),
        1 => (conn.clone(), job.clone()).prop_map(|(conn, job)| Op::ReserveJob { conn, job }),
        3 => (conn.clone(), job.clone()).prop_map(|(conn, job)| Op::Delete { conn, job }),
        3 => (conn.clone(), job.clone(), pri(), delay_ms())
            .prop_map(|(conn, job, pri, delay_ms)| Op::Release { conn, job, pri, delay_ms }),
        2 => (conn.clone(), job.clone(), pri()).prop_map(|(conn, job, pri)| Op::Bury { conn, job, pri }),
        1 => (conn.clone(), job.clone()).prop_map(|(conn, job)| Op::Touch { conn, job }),
        3 => (conn.clone(), job.clone()).prop_map(|(conn, job)| Op::Fail { conn, job }),
        2 => (conn.clone(), 0u8..4).prop_map(|(conn, bound)| Op::Kick { conn, bound }),
        1 => job.prop_map(|job| Op::KickJob { job }),
        1 => (tube.clone(), 0u8..4).prop_map(|(tube, secs)| Op::Pause { tube, secs }),
        2 => (tube.clone(), retry_policy()).prop_map(|(tube, policy)| Op::Policy { tube, policy }),
        1 => tube.prop_map(|tube| Op::PurgeDead { tube }),
        1 => conn.prop_map(|conn| Op::Disconnect { conn }),
        6 => advance(),
    ]
    .boxed()
}

/// The operations of the recovery property test: the engine's, plus `put-unique`,
/// compaction steps and restarts.
pub fn recovery_op() -> BoxedStrategy<Op> {
    prop_oneof![
        20 => engine_op(),
        1 => (0..SLOTS, 0u8..3, 0u8..30).prop_map(|(conn, key, ttl_s)| Op::PutUnique { conn, key, ttl_s }),
        1 => Just(Op::CompactStart),
        1 => (1u8..8).prop_map(|jobs| Op::CompactChunk { jobs }),
        1 => Just(Op::CompactFinish),
        1 => Just(Op::Restart),
    ]
    .boxed()
}
