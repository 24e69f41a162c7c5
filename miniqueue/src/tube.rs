//! A tube: the named queue jobs are put into and reserved from.
//!
//! Each tube keeps its jobs in three ordered sets, one per waiting state, ordered the way
//! beanstalkd orders them: ready by (priority, id), so lower priorities run first and
//! equal priorities run FIFO; delayed by (deadline, id); buried by the time they were
//! buried. A `BTreeSet` rather than beanstalkd's binary heap, because `delete`,
//! `reserve-job` and `kick-job` remove jobs from the middle, which a heap does in O(n)
//! without an index and a B-tree does in O(log n).
//!
//! A tube lives while anything refers to it (a connection using or watching it, a job,
//! a retry policy or a unique key) and `default` lives forever, as in beanstalkd, whose
//! `list-tubes` therefore never shows tubes nobody uses.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::job::{ConnId, Nanos};
use crate::retry::RetryPolicy;

#[derive(Debug)]
pub struct Tube {
    pub name: Arc<str>,
    /// Ready jobs as (pri, id).
    pub ready: BTreeSet<(u32, u64)>,
    /// Delayed jobs as (deadline, id).
    pub delayed: BTreeSet<(Nanos, u64)>,
    /// Buried (and dead) jobs as (bury sequence, id): oldest first.
    pub buried: BTreeSet<(u64, u64)>,
    pub reserved_ct: u64,
    /// Ready jobs with a priority below 1024.
    pub urgent_ct: u64,
    /// Buried jobs that carry the dead mark.
    pub dead_ct: u64,
    /// Jobs of this tube in any state.
    pub jobs_ct: u64,
    pub total_jobs: u64,
    pub total_deletes: u64,
    pub pause_ct: u64,
    /// The pause given to `pause-tube`, in nanoseconds; 0 when not paused.
    pub pause: Nanos,
    pub unpause_at: Nanos,
    pub using_ct: u32,
    pub watching_ct: u32,
    /// Connections blocked in `reserve` that watch this tube, first come first served.
    pub waiting: VecDeque<ConnId>,
    pub policy: Option<RetryPolicy>,
    pub total_retries: u64,
    pub total_dead: u64,
    /// `put-unique` keys: key -> (taken until, job that took it).
    pub unique: HashMap<String, (Nanos, u64)>,
}

impl Tube {
    pub fn new(name: Arc<str>) -> Self {
        Tube {
            name,
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            buried: BTreeSet::new(),
            reserved_ct: 0,
            urgent_ct: 0,
            dead_ct: 0,
            jobs_ct: 0,
            total_jobs: 0,
            total_deletes: 0,
            pause_ct: 0,
            pause: 0,
            unpause_at: 0,
            using_ct: 0,
            watching_ct: 0,
            waiting: VecDeque::new(),
            policy: None,
            total_retries: 0,
            total_dead: 0,
            unique: HashMap::new(),
        }
    }

    /// Whether anything still refers to this tube.
    pub fn in_use(&self) -> bool {
        &*self.name == "default"
            || self.using_ct > 0
            || self.watching_ct > 0
            || self.jobs_ct > 0
            || self.policy.is_some()
            || !self.unique.is_empty()
    }

    /// Paused at `now`? A pause counts as over at its deadline even before the timer
    /// has lifted it.
    pub fn is_paused(&self, now: Nanos) -> bool {
        self.pause > 0 && self.unpause_at > now
    }

    /// Whether `stats-tube` shows the extension keys.
    pub fn shows_extensions(&self) -> bool {
        self.policy.is_some() || self.dead_ct > 0 || self.total_dead > 0
    }
}
