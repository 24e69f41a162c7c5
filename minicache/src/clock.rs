//! Time, as the cache sees it: a monotonic count of nanoseconds behind a trait.
//!
//! Expiry, refresh-ahead and XFetch all ask "what time is it?", and their tests need to
//! answer that themselves. So the cache never calls `Instant::now()` directly; it asks a
//! [`Clock`]. [`SystemClock`] is the default; [`MockClock`] is advanced by hand in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nanoseconds since the clock's own origin. Monotonic; only differences mean anything.
pub type Nanos = u64;

/// A monotonic clock.
pub trait Clock: Send + Sync + 'static {
    /// Now, in nanoseconds since this clock's origin. Never goes backwards.
    fn now(&self) -> Nanos;
}

/// The real monotonic clock (`Instant`), counted from when it was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        // u64 nanoseconds last 584 years past the origin.
        self.origin.elapsed().as_nanos() as Nanos
    }
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Debug, Clone, Default)]
pub struct MockClock {
    now: Arc<AtomicU64>,
}

impl MockClock {
    /// A clock at time 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Sets the time; it must not go backwards (the clock is monotonic).
    pub fn set(&self, to: Nanos) {
        let before = self.now.swap(to, Ordering::SeqCst);
        assert!(to >= before, "a MockClock must not go backwards ({before} -> {to})");
    }
}

impl Clock for MockClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_clock_is_shared_by_clones_and_moves_only_when_told() {
        let clock = MockClock::new();
        let other = clock.clone();
        assert_eq!(clock.now(), 0);
        other.advance(Duration::from_millis(5));
        assert_eq!(clock.now(), 5_000_000);
        clock.set(6_000_000);
        assert_eq!(other.now(), 6_000_000);
    }

    #[test]
    fn system_clock_does_not_go_backwards() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}
