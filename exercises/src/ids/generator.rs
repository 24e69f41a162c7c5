//! The ID generator a program calls: the pure [`SnowflakeCore`] plus a clock to read and
//! wait on, and the node-id lease it checks before every ID.
//!
//! [`Generator::next_id`] loops: check the lease (lost or expired: stop), give the core
//! the clock reading, and either return the ID, wait as the core asks (a full
//! millisecond, or a clock step back within the bound), or return the core's refusal.
//! Every clock regression it meets is recorded as a [`ClockEvent`] (how far behind,
//! waited or refused), which is what the demo reports.
//!
//! Waiting blocks the thread (a sleep of at most the regression bound), so call it from
//! a plain thread or `spawn_blocking`, not from an async task. Left out: a lock-free
//! generator shared by many threads (give each thread its own node id instead, or put
//! this one behind a mutex) and batch allocation of IDs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clock::WallClock;
use super::node_lease::{LeaseState, NodeLease};
use super::snowflake::{IdError, SnowflakeCore, SnowflakeId, Step, Variant, WaitReason, DEFAULT_MAX_BACKWARD_WAIT_MS};

/// Waits one `next_id` call may do before it decides the clock is not moving. Each wait
/// is at most the regression bound, so a working clock needs one or two.
const MAX_WAITS_PER_CALL: usize = 1_000;

/// How a generator behaves.
#[derive(Clone, Copy, Debug)]
pub struct GeneratorConfig {
    /// Clock steps back up to this many ms are waited out; larger ones are refused.
    pub max_backward_wait_ms: u64,
    /// [`Variant::Correct`] except in the tests that show a broken one being caught.
    pub variant: Variant,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig { max_backward_wait_ms: DEFAULT_MAX_BACKWARD_WAIT_MS, variant: Variant::Correct }
    }
}

/// One stretch of time in which the clock read earlier than the last issued
/// millisecond, from the first call that saw it to the next ID issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockEvent {
    /// IDs issued before it began: lines an event up with the step that caused it.
    pub issued_before: u64,
    /// The furthest behind the clock read during the event.
    pub max_behind_ms: u64,
    /// Calls refused with [`IdError::ClockMovedBackwards`] during it.
    pub refusals: u64,
    /// Milliseconds of clock time waited out (within the bound).
    pub waited_ms: u64,
    /// Real time from the first sighting to the next ID (or to now, if still open).
    pub lasted: Duration,
    /// Whether an ID has been issued since, closing it.
    pub resolved: bool,
}

/// Counters over a generator's life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeneratorStats {
    pub issued: u64,
    /// Waits for the next millisecond after 4,096 IDs in one.
    pub sequence_waits: u64,
    /// Waits for the clock to come back to the last issued millisecond.
    pub regression_waits: u64,
    /// Calls refused because the clock was too far behind.
    pub refusals: u64,
}

/// A snowflake generator for one node id.
pub struct Generator {
    core: SnowflakeCore,
    clock: Arc<dyn WallClock>,
    /// `None` for a generator whose node id was assigned by hand (tests, one process).
    lease: Option<Arc<LeaseState>>,
    stats: GeneratorStats,
    events: Vec<ClockEvent>,
    /// When the open event (the last of `events`, unresolved) began.
    event_started: Option<Instant>,
}

impl Generator {
    /// A generator for a node id assigned by hand, without a lease: only safe when
    /// nothing else can use `node` (one process, or tests).
    pub fn unleased(node: u16, clock: Arc<dyn WallClock>, config: GeneratorConfig) -> Generator {
        Generator::build(SnowflakeCore::new(node, 0, config.max_backward_wait_ms, config.variant), clock, None)
    }

    /// A generator for a leased node id: it starts above the previous holder's ceiling,
    /// never passes its own, and stops when the lease is lost or runs out.
    pub fn for_lease(lease: &NodeLease, config: GeneratorConfig) -> Generator {
        let core = SnowflakeCore::new(lease.node(), lease.floor_unix_ms(), config.max_backward_wait_ms, config.variant);
        Generator::build(core, lease.clock(), Some(lease.state()))
    }

    fn build(core: SnowflakeCore, clock: Arc<dyn WallClock>, lease: Option<Arc<LeaseState>>) -> Generator {
        Generator { core, clock, lease, stats: GeneratorStats::default(), events: Vec::new(), event_started: None }
    }

    pub fn node(&self) -> u16 {
        self.core.node()
    }

    pub fn stats(&self) -> &GeneratorStats {
        &self.stats
    }

    /// Every clock regression met so far, oldest first.
    pub fn events(&self) -> &[ClockEvent] {
        &self.events
    }

    /// The last millisecond issued from (or the floor): what [`NodeLease::release`]
    /// publishes for the next holder.
    pub fn last_unix_ms(&self) -> u64 {
        self.core.last_unix_ms()
    }

    /// The next ID, waiting if the core asks to; an error says why none can be issued
    /// now (and the message says what to do).
    pub fn next_id(&mut self) -> Result<SnowflakeId, IdError> {
        for _ in 0..MAX_WAITS_PER_CALL {
            if let Some(lease) = &self.lease {
                let ceiling = lease.check()?;
                self.core.raise_ceiling(ceiling);
            }
            let now = self.clock.now_unix_ms();
            match self.core.next(now) {
                Ok(Step::Issued(id)) => {
                    self.close_event();
                    self.stats.issued += 1;
                    return Ok(id);
                }
                Ok(Step::Wait { until_unix_ms, reason: WaitReason::SequenceExhausted }) => {
                    self.stats.sequence_waits += 1;
                    self.clock.wait_until(until_unix_ms);
                }
                Ok(Step::Wait { until_unix_ms, reason: WaitReason::ClockBehind { behind_ms } }) => {
                    self.stats.regression_waits += 1;
                    let event = self.open_event(behind_ms);
                    event.waited_ms += until_unix_ms.saturating_sub(now);
                    self.clock.wait_until(until_unix_ms);
                }
                Err(refusal @ IdError::ClockMovedBackwards { behind_ms, .. }) => {
                    self.stats.refusals += 1;
                    self.open_event(behind_ms).refusals += 1;
                    return Err(refusal);
                }
                Err(other) => return Err(other),
            }
        }
        Err(IdError::ClockNotAdvancing)
    }

    /// The open event, extended to `behind_ms`, or a new one.
    fn open_event(&mut self, behind_ms: u64) -> &mut ClockEvent {
        if self.event_started.is_none() {
            self.event_started = Some(Instant::now());
            self.events.push(ClockEvent {
                issued_before: self.stats.issued,
                max_behind_ms: 0,
                refusals: 0,
                waited_ms: 0,
                lasted: Duration::ZERO,
                resolved: false,
            });
        }
        let started = self.event_started.unwrap_or_else(Instant::now);
        let open = self.events.len() - 1;
        let event = &mut self.events[open];
        event.max_behind_ms = event.max_behind_ms.max(behind_ms);
        event.lasted = started.elapsed();
        event
    }

    fn close_event(&mut self) {
        if let Some(started) = self.event_started.take() {
            if let Some(event) = self.events.last_mut() {
                event.lasted = started.elapsed();
                event.resolved = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::clock::ManualClock;
    use crate::ids::snowflake::{EPOCH_UNIX_MS, MAX_SEQUENCE};

    const T0: u64 = EPOCH_UNIX_MS + 5_000;

    #[test]
    fn a_full_millisecond_waits_for_the_next_one() {
        let clock = Arc::new(ManualClock::new(T0));
        let mut generator = Generator::unleased(2, clock.clone(), GeneratorConfig::default());
        let mut last = None;
        for _ in 0..=u32::from(MAX_SEQUENCE) + 1 {
            let id = generator.next_id().expect("issues");
            assert!(last.is_none_or(|l| id > l));
            last = Some(id);
        }
        assert_eq!(clock.now_unix_ms(), T0 + 1, "the 4,097th ID waited one millisecond");
        assert_eq!(generator.stats().sequence_waits, 1);
    }

    #[test]
    fn events_record_waits_and_refusals() {
        let clock = Arc::new(ManualClock::new(T0));
        let mut generator = Generator::unleased(2, clock.clone(), GeneratorConfig::default());
        generator.next_id().expect("first");
        clock.step_back(3);
        generator.next_id().expect("waits 3 ms, then issues");
        clock.step_back(50);
        assert!(matches!(generator.next_id(), Err(IdError::ClockMovedBackwards { behind_ms: 50, .. })));
        clock.advance(45);
        generator.next_id().expect("within the bound again: waits and issues");
        let events = generator.events();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!((events[0].max_behind_ms, events[0].refusals, events[0].waited_ms), (3, 0, 3));
        assert_eq!((events[1].max_behind_ms, events[1].refusals, events[1].waited_ms), (50, 1, 5));
        assert!(events.iter().all(|e| e.resolved));
    }
}
