//! How long to sleep before a retry: capped exponential backoff with jitter, as the AWS
//! Architecture Blog's "Exponential Backoff And Jitter" (Marc Brooker, 2015) defines it.
//!
//! ```text
//!  full jitter           sleep = random_between(0, min(cap, base · 2^attempt))
//!  decorrelated jitter   sleep = min(cap, random_between(base, previous_sleep · 3))
//!                        (previous_sleep starts at base)
//! ```
//!
//! `attempt` counts from 0 for the first retry, so full jitter's first sleep is in
//! `[0, base]`, the second in `[0, 2·base]`, and so on up to `[0, cap]`. Without jitter
//! every client that failed together retries together, and the upstream sees the same
//! spike again one backoff later; full jitter spreads them evenly over the interval.
//! Decorrelated jitter grows from the previous sleep rather than from the attempt
//! number, which the blog found completes the same work in a similar time with fewer
//! calls. Both are pure functions of their inputs and a random source, so the tests
//! check their bounds directly. Left out: "equal jitter" (half fixed, half random),
//! which the blog found worse than both.

use std::time::Duration;

/// Which formula to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// No randomness: `min(cap, base · 2^attempt)`. For comparison only: it
    /// synchronises retries.
    None,
    Full,
    Decorrelated,
}

/// A backoff policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    /// The sleeps of one call's retries, in order.
    pub fn sleeps(&self) -> BackoffSleeps {
        BackoffSleeps { backoff: *self, attempt: 0, previous: self.base }
    }
}

/// The successive sleeps of one call.
#[derive(Clone, Debug)]
pub struct BackoffSleeps {
    backoff: Backoff,
    /// Retries already slept for.
    attempt: u32,
    /// The last sleep (decorrelated jitter grows from it).
    previous: Duration,
}

impl BackoffSleeps {
    /// The sleep before the next retry.
    pub fn next_sleep(&mut self, rng: &mut fastrand::Rng) -> Duration {
        let Backoff { base, cap, jitter } = self.backoff;
        let sleep = match jitter {
            Jitter::None => exponential(base, cap, self.attempt),
            Jitter::Full => full_jitter(base, cap, self.attempt, rng),
            Jitter::Decorrelated => decorrelated_jitter(base, cap, self.previous, rng),
        };
        self.attempt = self.attempt.saturating_add(1);
        self.previous = sleep;
        sleep
    }
}

/// `min(cap, base · 2^attempt)`, without overflowing.
pub fn exponential(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// Full jitter: uniform in `[0, min(cap, base · 2^attempt)]`.
pub fn full_jitter(base: Duration, cap: Duration, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    random_between(Duration::ZERO, exponential(base, cap, attempt), rng)
}

/// Decorrelated jitter: uniform in `[base, previous · 3]`, then capped.
pub fn decorrelated_jitter(base: Duration, cap: Duration, previous: Duration, rng: &mut fastrand::Rng) -> Duration {
    let high = previous.saturating_mul(3).max(base);
    random_between(base, high, rng).min(cap)
}

/// Uniform in `[low, high]` at nanosecond resolution.
fn random_between(low: Duration, high: Duration, rng: &mut fastrand::Rng) -> Duration {
    let low_ns = u64::try_from(low.as_nanos()).unwrap_or(u64::MAX);
    let high_ns = u64::try_from(high.as_nanos()).unwrap_or(u64::MAX).max(low_ns);
    Duration::from_nanos(rng.u64(low_ns..=high_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_up_to_the_cap_without_overflow() {
        let ms = Duration::from_millis;
        assert_eq!(exponential(ms(10), ms(100), 0), ms(10));
        assert_eq!(exponential(ms(10), ms(100), 3), ms(80));
        assert_eq!(exponential(ms(10), ms(100), 4), ms(100));
        assert_eq!(exponential(ms(10), ms(100), 200), ms(100));
        let mut sleeps = Backoff { base: ms(10), cap: ms(100), jitter: Jitter::None }.sleeps();
        let mut rng = fastrand::Rng::with_seed(1);
        let got: Vec<Duration> = (0..5).map(|_| sleeps.next_sleep(&mut rng)).collect();
        assert_eq!(got, vec![ms(10), ms(20), ms(40), ms(80), ms(100)]);
    }
}
