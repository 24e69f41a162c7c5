//! Per-tube retry policies: how many attempts a job gets, and how long it waits between
//! them.
//!
//! beanstalkd has no notion of failure: a worker that gives up releases or buries the
//! job, and a TTR that runs out puts it straight back to ready, forever. Sidekiq, BullMQ
//! and River users expect more, so a tube may carry a [`RetryPolicy`] (set with the
//! `tube-policy` extension command). A *failure* is a worker's `fail <id> <reason>`, a
//! TTR that runs out, or the worker's connection closing while it holds the job. On a
//! failure the policy decides: retry after a backoff delay, or move the job to the
//! tube's dead-letter state once it has had `max_attempts` attempts.
//!
//! The two backoffs are the ones those systems made standard:
//!
//! - **Capped exponential with full jitter** (the AWS Architecture Blog's "full
//!   jitter"): `uniform(0, min(cap, base * 2^n))`. Spreading retries over the whole
//!   window is what stops a thundering herd of synchronized retries after an outage.
//! - **Polynomial**, Sidekiq's formula: `n^4 + 15 + rand(10) * (n + 1)` in units of
//!   `base` (Sidekiq's unit is one second), capped at `cap`. It grows fast enough that a
//!   job failing for a day is retried a couple of dozen times, not thousands.
//!
//! `n` is the retry number counted from 0 (the first retry has n = 0). The policy is a
//! pure function of `n` and a random source, so the engine can be tested with a seed.

use crate::protocol::BackoffKind;

/// The delays are computed in milliseconds and capped here so `2^n` cannot overflow.
const MAX_SHIFT: u32 = 40;

/// What a tube does with failed jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the dead-letter state; 0 means retry forever.
    pub max_attempts: u32,
    pub backoff: BackoffKind,
    /// The backoff's unit, in milliseconds.
    pub base_ms: u64,
    /// The longest delay, in milliseconds.
    pub cap_ms: u64,
}

/// What happens to a job after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Back to ready after this many milliseconds (0: at once).
    RetryAfterMs(u64),
    /// Out of attempts: to the dead-letter state.
    Dead,
}

impl RetryPolicy {
    /// Decides what a failure does to a job that has been reserved `attempts` times and
    /// had failed `failures` times before this failure (the retry number: 0 for the
    /// first retry, however many times the job was released in between).
    pub fn decide(&self, attempts: u32, failures: u32, rng: &mut fastrand::Rng) -> Verdict {
        if self.max_attempts > 0 && attempts >= self.max_attempts {
            return Verdict::Dead;
        }
        Verdict::RetryAfterMs(self.backoff_ms(failures, rng))
    }

    /// The delay before retry number `n` (0 for the first retry).
    pub fn backoff_ms(&self, n: u32, rng: &mut fastrand::Rng) -> u64 {
        match self.backoff {
            BackoffKind::None => 0,
            BackoffKind::Exponential => {
                let ceiling = self.base_ms.saturating_mul(1u64 << n.min(MAX_SHIFT)).min(self.cap_ms);
                rng.u64(0..=ceiling)
            }
            BackoffKind::Polynomial => {
                let n = u64::from(n);
                let units = n.saturating_pow(4).saturating_add(15).saturating_add(rng.u64(0..=9).saturating_mul(n + 1));
                self.base_ms.saturating_mul(units).min(self.cap_ms)
            }
        }
    }

    /// The name `stats-tube` shows.
    pub fn backoff_name(&self) -> &'static str {
        match self.backoff {
            BackoffKind::None => "none",
            BackoffKind::Exponential => "exponential",
            BackoffKind::Polynomial => "polynomial",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: BackoffKind) -> RetryPolicy {
        RetryPolicy { max_attempts: 3, backoff, base_ms: 100, cap_ms: 10_000 }
    }

    #[test]
    fn dead_after_exactly_max_attempts() {
        let mut rng = fastrand::Rng::with_seed(1);
        let p = policy(BackoffKind::None);
        assert_eq!(p.decide(1, 0, &mut rng), Verdict::RetryAfterMs(0));
        assert_eq!(p.decide(2, 1, &mut rng), Verdict::RetryAfterMs(0));
        assert_eq!(p.decide(3, 2, &mut rng), Verdict::Dead);
        let forever = RetryPolicy { max_attempts: 0, ..p };
        assert_eq!(forever.decide(1_000_000, 999_999, &mut rng), Verdict::RetryAfterMs(0));
    }

    #[test]
    fn exponential_stays_in_its_window_and_uses_all_of_it() {
        let mut rng = fastrand::Rng::with_seed(7);
        let p = policy(BackoffKind::Exponential);
        for n in 0..20 {
            let ceiling = (100u64 << n).min(10_000);
            let samples: Vec<u64> = (0..2000).map(|_| p.backoff_ms(n, &mut rng)).collect();
            assert!(samples.iter().all(|&d| d <= ceiling));
            let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
            // Full jitter: uniform over [0, ceiling], so the mean is near ceiling / 2.
            assert!((mean - ceiling as f64 / 2.0).abs() < ceiling as f64 * 0.06, "n={n} mean={mean}");
        }
    }

    #[test]
    fn polynomial_follows_sidekiq() {
        let mut rng = fastrand::Rng::with_seed(3);
        let p = RetryPolicy { cap_ms: u64::MAX, ..policy(BackoffKind::Polynomial) };
        for n in 0..6u32 {
            let n64 = u64::from(n);
            for _ in 0..200 {
                let d = p.backoff_ms(n, &mut rng);
                let low = 100 * (n64.pow(4) + 15);
                let high = 100 * (n64.pow(4) + 15 + 9 * (n64 + 1));
                assert!((low..=high).contains(&d), "n={n} d={d}");
            }
        }
        assert_eq!(policy(BackoffKind::Polynomial).backoff_ms(30, &mut rng), 10_000);
    }
}
