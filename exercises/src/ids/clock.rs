//! The wall clocks an ID generator reads: the system's, a hand-driven one for tests, and
//! a system clock that a scenario can step backwards on purpose.
//!
//! A snowflake ID embeds the wall-clock time, so the generator must read the *wall*
//! clock (which NTP, an operator or a VM migration can step backwards), not a monotonic
//! one (which cannot go back, but also does not agree between machines). That is the
//! whole difficulty this exercise is about, so the clock is a trait the generator is
//! given, and the tests drive a [`ManualClock`] by hand.
//!
//! A clock also knows how to wait for itself ([`WallClock::wait_until`]): the system
//! clock sleeps, while the manual clock jumps forward, which keeps the tests
//! deterministic and instant. Left out: leap-second smearing and sub-millisecond
//! timestamps (the ID has millisecond resolution).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall clock in milliseconds since the Unix epoch.
pub trait WallClock: Send + Sync {
    /// The current time, in ms since 1970-01-01T00:00:00Z. It may go backwards.
    fn now_unix_ms(&self) -> u64;

    /// Blocks until this clock probably reads at least `unix_ms`. It may return early
    /// (if the clock was stepped while waiting); the caller reads the clock again and
    /// decides. It must not block much longer than the distance it was asked to wait.
    fn wait_until(&self, unix_ms: u64);
}

/// The operating system's clock (`CLOCK_REALTIME`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        system_unix_micros() / 1_000
    }

    fn wait_until(&self, unix_ms: u64) {
        sleep_until_micros(system_unix_micros(), unix_ms);
    }
}

/// A clock that moves only when told to, or when something waits on it (it then jumps
/// to the awaited instant). Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_unix_ms: AtomicU64,
    /// Total milliseconds [`WallClock::wait_until`] jumped, so a test can see that the
    /// generator waited and for how long.
    waited_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(unix_ms: u64) -> ManualClock {
        ManualClock { now_unix_ms: AtomicU64::new(unix_ms), waited_ms: AtomicU64::new(0) }
    }

    /// Sets the time, in either direction.
    pub fn set(&self, unix_ms: u64) {
        self.now_unix_ms.store(unix_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.now_unix_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Steps the clock back by `ms` (saturating at the Unix epoch), as an NTP step would.
    pub fn step_back(&self, ms: u64) {
        let _ = self.now_unix_ms.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| Some(now.saturating_sub(ms)));
    }

    /// How many milliseconds waiting has moved this clock so far.
    pub fn waited_ms(&self) -> u64 {
        self.waited_ms.load(Ordering::SeqCst)
    }
}

impl WallClock for ManualClock {
    fn now_unix_ms(&self) -> u64 {
        self.now_unix_ms.load(Ordering::SeqCst)
    }

    fn wait_until(&self, unix_ms: u64) {
        let before = self.now_unix_ms.fetch_max(unix_ms, Ordering::SeqCst);
        self.waited_ms.fetch_add(unix_ms.saturating_sub(before), Ordering::SeqCst);
    }
}

/// The system clock plus an offset that a scenario changes while generators run: how
/// the demo injects "NTP stepped this machine's clock back 120 ms" without touching the
/// real clock (which needs root and would upset everything else on the machine).
#[derive(Debug, Default)]
pub struct SteppableClock {
    /// Added to the system time, in microseconds; negative after a step back.
    offset_micros: AtomicI64,
}

impl SteppableClock {
    pub fn new() -> SteppableClock {
        SteppableClock::default()
    }

    /// A clock that runs `ms` ahead of (positive) or behind (negative) the system clock,
    /// as another machine's would.
    pub fn skewed(ms: i64) -> SteppableClock {
        SteppableClock { offset_micros: AtomicI64::new(ms.saturating_mul(1_000)) }
    }

    /// Steps this clock back by `ms` from now on; it then runs at the normal rate again.
    pub fn step_back(&self, ms: u64) {
        let micros = i64::try_from(ms.saturating_mul(1_000)).unwrap_or(i64::MAX);
        self.offset_micros.fetch_sub(micros, Ordering::SeqCst);
    }

    fn now_unix_micros(&self) -> u64 {
        let offset = self.offset_micros.load(Ordering::SeqCst);
        system_unix_micros().saturating_add_signed(offset)
    }
}

impl WallClock for SteppableClock {
    fn now_unix_ms(&self) -> u64 {
        self.now_unix_micros() / 1_000
    }

    fn wait_until(&self, unix_ms: u64) {
        sleep_until_micros(self.now_unix_micros(), unix_ms);
    }
}

/// Sleeps from `now_micros` until the millisecond `unix_ms` begins, once. Waits here are
/// short (under a millisecond for a full sequence, at most the regression bound for a
/// clock step), so one sleep with the kernel's usual ~50 µs slack is precise enough.
fn sleep_until_micros(now_micros: u64, unix_ms: u64) {
    let target_micros = unix_ms.saturating_mul(1_000);
    if target_micros > now_micros {
        std::thread::sleep(Duration::from_micros(target_micros - now_micros));
    }
}

fn system_unix_micros() -> u64 {
    // A system clock set before 1970 reads as 1970: the generator then refuses to issue
    // (the time is before its epoch), which is the right answer for a broken clock.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manual_clock_jumps_when_waited_on_and_steps_back_on_demand() {
        let clock = ManualClock::new(1_000);
        clock.wait_until(1_005);
        assert_eq!(clock.now_unix_ms(), 1_005);
        assert_eq!(clock.waited_ms(), 5);
        clock.wait_until(1_000); // already past: no jump, no wait counted
        assert_eq!(clock.now_unix_ms(), 1_005);
        assert_eq!(clock.waited_ms(), 5);
        clock.step_back(10);
        assert_eq!(clock.now_unix_ms(), 995);
    }

    #[test]
    fn a_stepped_clock_stays_behind_the_system_clock() {
        let clock = SteppableClock::new();
        clock.step_back(500);
        let behind = SystemClock.now_unix_ms() as i64 - clock.now_unix_ms() as i64;
        assert!((499..=520).contains(&behind), "the stepped clock is {behind} ms behind, expected about 500");
        let ahead = SteppableClock::skewed(300);
        let lead = ahead.now_unix_ms() as i64 - SystemClock.now_unix_ms() as i64;
        assert!((280..=301).contains(&lead), "the skewed clock leads by {lead} ms, expected about 300");
    }
}
