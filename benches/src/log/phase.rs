//! What a produce or consume phase is asked to do, what it hands back, and the watch
//! that keeps it bounded.
//!
//! The three clients ([`super::kafka`], [`super::redis_streams`], [`super::jetstream`])
//! share this shape, so that the orchestration in [`super`] treats them alike and the
//! report compares like with like. A phase fails with a `String`: the failure is a
//! result, shown in the report next to the phases that worked.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::latency::Histogram;
use crate::interrupt;

/// What one phase moves.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Records to produce, then to consume back.
    pub records: u64,
    /// Payload bytes of each record.
    pub record_bytes: usize,
    /// Records a producer may have sent but not yet seen acknowledged. The same bound
    /// for every system, so none wins by queueing more; see [`super::Options::window`].
    pub window: u64,
}

impl Workload {
    /// The payload bytes of the whole workload.
    pub fn bytes(&self) -> u64 {
        self.records * self.record_bytes as u64
    }
}

/// A finished produce phase.
#[derive(Debug)]
pub struct Produced {
    /// Records acknowledged; equal to the workload's, or the phase would have failed.
    pub records: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    /// Per record: from handing it to the client library to its acknowledgement.
    pub latency: Histogram,
}

/// A finished consume phase.
#[derive(Debug)]
pub struct Consumed {
    /// Records read back and checked ([`super::payload::check`]).
    pub records: u64,
    /// From asking for the first record to holding the last.
    pub elapsed: Duration,
}

/// How often the progress bar's message is redrawn: often enough to look alive, rarely
/// enough to cost nothing.
const REDRAW: Duration = Duration::from_millis(250);

/// Keeps a phase bounded: its deadline, Ctrl-C, and the progress bar's message.
/// A client's loop calls [`Watch::check`] every batch of records, never per record.
pub struct Watch {
    /// "minilog produce, 100 B", for the bar and for errors.
    label: String,
    bar: ProgressBar,
    total: u64,
    timeout: Duration,
    deadline: Instant,
    next_redraw: Instant,
}

impl Watch {
    pub fn new(bar: &ProgressBar, label: String, total: u64, timeout: Duration) -> Watch {
        let now = Instant::now();
        bar.set_message(format!("{label}: starting"));
        Watch { label, bar: bar.clone(), total, timeout, deadline: now + timeout, next_redraw: now }
    }

    /// `Err` once the user pressed Ctrl-C or the phase ran past its deadline; `done` is
    /// how far it got.
    pub fn check(&mut self, done: u64) -> Result<(), String> {
        if interrupt::requested() {
            return Err("interrupted".to_string());
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Err(format!(
                "{}: {done} of {} records after {} s, the phase's deadline",
                self.label,
                self.total,
                self.timeout.as_secs()
            ));
        }
        if now >= self.next_redraw {
            self.bar.set_message(format!("{}: {done}/{}", self.label, self.total));
            self.next_redraw = now + REDRAW;
        }
        Ok(())
    }

    /// The time left before the deadline, for a client call that takes a timeout.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}
