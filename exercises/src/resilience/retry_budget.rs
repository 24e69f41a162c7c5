//! A retry budget: retries may be at most a fixed share of the requests over a sliding
//! window, plus a small reserve, so that in an outage the load a client sends stays
//! near the load it was asked to send instead of multiplying by its attempt count.
//!
//! Finagle's `RetryBudget(ttl, minRetriesPerSec, percentCanRetry)` and gRPC's retry
//! throttling are the models. Here:
//!
//! ```text
//!  every request      deposit: requests += 1 in the current slot
//!  every retry        allowed  iff  retries_in_window + 1 ≤ ratio · requests_in_window
//!                                                         + min_per_second · window
//!                     then retries += 1
//! ```
//!
//! The window is `SLOTS` slots of `window / SLOTS` each; the oldest slot falls out as
//! time moves on. With `ratio` 0.1 a client retries at most one request in ten over any
//! window (load amplification ≤ 1.1 plus the reserve), whatever its `max_attempts`;
//! the reserve lets a quiet client still retry its occasional failure. When healthy,
//! few requests fail and the budget is never near its limit; it binds only when many
//! fail at once, which is exactly the retry storm. A denied retry fails the call now:
//! the caller sees the error sooner, and the upstream gets air.
//!
//! Pure: time comes in as an argument. Left out: sharing a budget between client
//! instances (each process keeps its own, so N processes may send N reserves).

use std::collections::VecDeque;
use std::time::Duration;

/// How many slots the window is cut into: the budget forgets old traffic in steps of
/// `window / SLOTS`.
pub const SLOTS: u32 = 10;

/// The budget's knobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    /// The window requests and retries are counted over (Finagle's `ttl`).
    pub window: Duration,
    /// The share of requests that may be retried (0.1 = 10 %).
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic (Finagle's `minRetriesPerSec`).
    pub min_per_second: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig { window: Duration::from_secs(10), ratio: 0.2, min_per_second: 10.0 }
    }
}

impl RetryBudgetConfig {
    /// The retries allowed in one window regardless of traffic.
    pub fn reserve(&self) -> f64 {
        self.min_per_second * self.window.as_secs_f64()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    index: u64,
    requests: u64,
    retries: u64,
}

/// Counters over the budget's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryBudgetStats {
    pub requests: u64,
    pub retries_allowed: u64,
    pub retries_denied: u64,
}

/// A retry budget. Not shared by itself: the resilient client holds it in a mutex.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    slot_length: Duration,
    /// The slots of the current window, oldest first; at most [`SLOTS`].
    slots: VecDeque<Slot>,
    stats: RetryBudgetStats,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig) -> RetryBudget {
        assert!(!config.window.is_zero(), "a retry budget needs a window");
        assert!(config.ratio >= 0.0 && config.min_per_second >= 0.0, "a budget cannot be negative");
        RetryBudget { config, slot_length: config.window / SLOTS, slots: VecDeque::new(), stats: Default::default() }
    }

    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    pub fn stats(&self) -> RetryBudgetStats {
        self.stats
    }

    /// Records a request (a first attempt) at `now`.
    pub fn deposit(&mut self, now: Duration) {
        self.current(now).requests += 1;
        self.stats.requests += 1;
    }

    /// Whether a retry at `now` fits the budget; if it does, it is counted.
    pub fn try_withdraw(&mut self, now: Duration) -> bool {
        self.current(now);
        let (requests, retries) = self.window_totals();
        let allowed = (retries + 1) as f64 <= self.config.ratio * requests as f64 + self.config.reserve();
        if allowed {
            self.current(now).retries += 1;
            self.stats.retries_allowed += 1;
        } else {
            self.stats.retries_denied += 1;
        }
        allowed
    }

    /// Requests and retries in the current window.
    pub fn window_totals(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(req, ret), slot| (req + slot.requests, ret + slot.retries))
    }

    /// The slot `now` falls in, after dropping the slots that left the window.
    fn current(&mut self, now: Duration) -> &mut Slot {
        let index = u64::try_from(now.as_nanos() / self.slot_length.as_nanos().max(1)).unwrap_or(u64::MAX);
        while self.slots.front().is_some_and(|s| s.index + u64::from(SLOTS) <= index) {
            self.slots.pop_front();
        }
        if self.slots.back().is_none_or(|s| s.index < index) {
            self.slots.push_back(Slot { index, ..Slot::default() });
        }
        assert!(self.slots.len() <= SLOTS as usize, "the window holds {} slots", self.slots.len());
        // Time is monotonic, so `now` is in the newest slot.
        let last = self.slots.len() - 1;
        &mut self.slots[last]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_at_the_ratio_plus_the_reserve_and_the_window_slides() {
        let config = RetryBudgetConfig { window: Duration::from_secs(1), ratio: 0.1, min_per_second: 2.0 };
        let mut budget = RetryBudget::new(config);
        let t = Duration::from_millis(10);
        for _ in 0..100 {
            budget.deposit(t);
        }
        let granted = (0..50).filter(|_| budget.try_withdraw(t)).count();
        assert_eq!(granted, 12, "10 % of 100 requests plus a reserve of 2");
        // A window later the old traffic is forgotten: only the reserve is left.
        let later = Duration::from_millis(1_020);
        let granted = (0..50).filter(|_| budget.try_withdraw(later)).count();
        assert_eq!(granted, 2);
        assert_eq!(budget.stats().retries_allowed, 14);
        assert_eq!(budget.stats().retries_denied, 86);
    }
}
