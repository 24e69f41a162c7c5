//! A job, its state, and the history the retry policy keeps about it.
//!
//! The states are beanstalkd's (ready, delayed, reserved, buried), and the dead-letter
//! state is a kind of buried: a dead job sits in its tube's buried list with a dead mark,
//! so `peek-buried`, `kick` and `kick-job` (and every beanstalk UI) see it, and kicking it
//! is the replay. Times are wall-clock nanoseconds since the Unix epoch, as in
//! beanstalkd, so a delayed job's deadline means the same thing after a restart.

use bytes::Bytes;

/// Identifies a client connection inside the engine.
pub type ConnId = u64;

/// Wall-clock nanoseconds since the Unix epoch.
pub type Nanos = i64;

pub const NANOS_PER_SEC: Nanos = 1_000_000_000;

/// Priorities below this are "urgent" (beanstalkd's `URGENT_THRESHOLD`).
pub const URGENT_THRESHOLD: u32 = 1024;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    Delayed {
        deadline: Nanos,
    },
    Reserved {
        by: ConnId,
        deadline: Nanos,
    },
    /// `seq` orders the tube's buried list (kick takes the oldest first).
    Buried {
        seq: u64,
    },
}

/// beanstalkd's per-job counters, shown by `stats-job`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub reserves: u32,
    pub timeouts: u32,
    pub releases: u32,
    pub buries: u32,
    pub kicks: u32,
}

/// Why a job is in the dead-letter state, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadMark {
    pub at: Nanos,
    pub reason: String,
}

/// What the retry policy knows about a job's past.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Reservations since the put (or the last replay from the dead-letter state).
    pub attempts: u32,
    /// Failures ever: `fail`, TTR expiry and lost connections (under a policy).
    pub failures: u32,
    pub first_failed_at: Nanos,
    pub last_failed_at: Nanos,
    pub last_error: Option<String>,
    /// Set while the job is in the dead-letter state.
    pub dead: Option<DeadMark>,
}

impl History {
    /// Whether `stats-job` shows the extension keys (jobs without any failure look
    /// exactly as they do in beanstalkd).
    pub fn is_visible(&self) -> bool {
        self.failures > 0 || self.dead.is_some()
    }
}

/// A job in memory.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub tube: std::sync::Arc<str>,
    pub pri: u32,
    /// The delay given at put (or the last release), in nanoseconds; `stats-job` shows it.
    pub delay: Nanos,
    pub ttr: Nanos,
    pub created_at: Nanos,
    /// The body without its trailing CRLF. `Bytes`, so replies share it instead of
    /// copying it.
    pub body: Bytes,
    pub state: State,
    pub counters: Counters,
    pub history: History,
    /// LSN of the last write-ahead-log record holding this job's whole image (its put,
    /// or a compaction rewrite). Segments before it can go once no live job needs them.
    pub image_lsn: u64,
}

impl Job {
    /// beanstalkd's state names.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Ready => "ready",
            State::Delayed { .. } => "delayed",
            State::Reserved { .. } => "reserved",
            State::Buried { .. } => "buried",
        }
    }

    pub fn is_dead(&self) -> bool {
        self.history.dead.is_some()
    }

    /// Bytes this job holds, for the compaction trigger's estimate of live data.
    pub fn footprint(&self) -> u64 {
        self.body.len() as u64 + 96 + self.tube.len() as u64
    }
}
