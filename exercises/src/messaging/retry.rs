//! The retry scheduler: what a worker does with a job after an attempt, as a pure
//! function of the attempt number, what went wrong, and the policy.
//!
//! It never touches the queue, a clock or a socket (the raft-core idea from STYLE.md),
//! so every rule here is tested without a server. The worker ([`super::worker`]) feeds it
//! the attempt number it read from `stats-job` and carries the [`Decision`] out with plain
//! beanstalk commands: `release <id> <pri> <delay>` for a retry, a put to the DLQ tube and
//! a `delete` for a dead letter.
//!
//! ```text
//!  reserved, attempt n (= stats-job `reserves`)
//!     │ n > max_attempts? ──yes──> dead letter: attempts exhausted (a crash loop: see below)
//!     ▼
//!  parse ── malformed ─────────────────────────> dead letter at once (poison)
//!     ▼
//!  provider ── permanent error ────────────────> dead letter at once (poison)
//!     │      └ transient error ── n == max ───> dead letter: attempts exhausted
//!     │                         └ n <  max ───> release with delay uniform in
//!     ▼                                          [0, min(cap, base × 2^(n-1))] whole seconds
//!  delivered ──> delete
//! ```
//!
//! **Full jitter** (Marc Brooker, "Exponential Backoff And Jitter", AWS 2015): the delay
//! is uniform in `[0, ceiling]` rather than `ceiling` plus a little noise, so a burst of
//! jobs that failed together (a provider outage) comes back spread over the whole
//! window instead of as a second burst. Beanstalk delays are whole seconds, so the draw
//! is a whole number of seconds; a real deployment with millisecond timers would draw
//! milliseconds.
//!
//! Left out: a retry budget shared across jobs (the resilience theme has one), and
//! per-error backoff (a `429` with `Retry-After` should wait at least that long; here
//! every transient error is treated alike).

/// The largest `max_attempts` a policy accepts: beyond this, a job that never succeeds
/// occupies the queue for hours of capped delays, which is an outage, not a retry policy.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// The largest backoff cap, in seconds: an hour. Beanstalk delays are u32 seconds, so
/// the protocol would allow 136 years.
pub const MAX_CAP_SECS: u32 = 3_600;

/// Capped exponential backoff with full jitter, in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's window is `[0, base]`; each later one doubles it.
    pub base_secs: u32,
    /// No window is wider than this: without a cap, retry 20 of a 1 s base would wait
    /// up to 12 days, long after anyone cares about the notification.
    pub cap_secs: u32,
}

impl Backoff {
    /// The widest delay retry number `retry` (0 for the first retry) may draw:
    /// `min(cap, base × 2^retry)`, without overflowing for any `retry`.
    pub fn ceiling(&self, retry: u32) -> u32 {
        let doubled = 1u64.checked_shl(retry).unwrap_or(u64::MAX).saturating_mul(u64::from(self.base_secs));
        let ceiling = doubled.min(u64::from(self.cap_secs)) as u32;
        debug_assert!(ceiling <= self.cap_secs);
        ceiling
    }

    /// The delay for retry number `retry`: uniform in `0..=ceiling(retry)` seconds.
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> u32 {
        let ceiling = self.ceiling(retry);
        let delay = rng.u32(0..=ceiling);
        assert!(delay <= ceiling, "a full-jitter draw stays in its window");
        delay
    }

    /// The longest a job can spend waiting in delays before its last attempt: the sum
    /// of the ceilings of its `max_attempts - 1` retries. Scenarios size their
    /// deadlines with it.
    pub fn worst_case_wait_secs(&self, max_attempts: u32) -> u64 {
        (0..max_attempts.saturating_sub(1)).map(|retry| u64::from(self.ceiling(retry))).sum()
    }
}

/// How many times a job is tried, and how the tries are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts (reservations) a job gets; the attempt that fails as number
    /// `max_attempts` sends it to the dead-letter queue.
    pub max_attempts: u32,
    pub backoff: Backoff,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}, got {0}")]
    MaxAttempts(u32),
    #[error("the backoff cap must be 0 to {MAX_CAP_SECS} s, got {0} s")]
    Cap(u32),
    #[error("the backoff base ({base} s) must not exceed its cap ({cap} s)")]
    BaseOverCap { base: u32, cap: u32 },
}

impl RetryPolicy {
    /// A policy, checked: every limit is explicit.
    pub fn new(max_attempts: u32, base_secs: u32, cap_secs: u32) -> Result<RetryPolicy, PolicyError> {
        if max_attempts == 0 || max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(PolicyError::MaxAttempts(max_attempts));
        }
        if cap_secs > MAX_CAP_SECS {
            return Err(PolicyError::Cap(cap_secs));
        }
        if base_secs > cap_secs {
            return Err(PolicyError::BaseOverCap { base: base_secs, cap: cap_secs });
        }
        Ok(RetryPolicy { max_attempts, backoff: Backoff { base_secs, cap_secs } })
    }
}

/// What an attempt ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The payload does not parse: no attempt will ever parse it. Poison.
    Malformed,
    /// The provider refused it for good (an unknown recipient, a 4xx that is not 429).
    /// Poison.
    Permanent,
    /// The provider could not take it now (a timeout, a 5xx, a 429): worth retrying.
    Transient,
}

/// Why a job ended in the dead-letter queue; stored in its envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Poison: the payload does not parse.
    MalformedPayload,
    /// Poison: the provider said no, for good.
    PermanentError,
    /// Every attempt failed transiently (or the job was reserved more often than
    /// allowed without finishing: a worker crash loop).
    AttemptsExhausted,
}

impl DeadReason {
    /// Whether the job was poison (dead-lettered without burning retries).
    pub fn is_poison(self) -> bool {
        matches!(self, DeadReason::MalformedPayload | DeadReason::PermanentError)
    }

    pub fn describe(self) -> &'static str {
        match self {
            DeadReason::MalformedPayload => "malformed payload",
            DeadReason::PermanentError => "permanent provider error",
            DeadReason::AttemptsExhausted => "attempts exhausted",
        }
    }
}

/// What to do with a job after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `release` it with this delay; `ceiling_secs` is the window it was drawn from
    /// (kept so the report and the checks can show the draw was in bounds).
    Retry { delay_secs: u32, ceiling_secs: u32 },
    /// Move it to the dead-letter queue.
    DeadLetter(DeadReason),
}

/// Which scheduler the worker runs. Everything but [`Variant::Correct`] is a
/// **deliberately broken** variant, kept so the tests and the demo can show that the
/// checks catch each mistake; never use one for real work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    #[default]
    Correct,
    /// Broken: treats every failure as transient, so a poison message burns all its
    /// attempts (and hits the provider `max_attempts` times) before it is
    /// dead-lettered.
    NoPoisonDetection,
    /// Broken: never gives up on transient failures, so a message to a recipient that
    /// is down cycles through the queue for ever and never reaches the DLQ.
    NoAttemptLimit,
    /// Broken: doubles the window without the cap, so late retries wait far longer
    /// than `cap_secs`.
    UncappedBackoff,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::NoPoisonDetection => "no poison detection",
            Variant::NoAttemptLimit => "no attempt limit",
            Variant::UncappedBackoff => "uncapped backoff",
        }
    }
}

/// Checked when a job is reserved, before any work: a job reserved more than
/// `max_attempts` times goes to the DLQ untried. Attempts that ended in a worker crash
/// or a TTR timeout count (the worker reads `reserves`, which counts every
/// reservation), so a message that kills the worker every time it is processed stops
/// after `max_attempts` crashes instead of looping for ever.
pub fn on_reserve(policy: &RetryPolicy, variant: Variant, attempt: u32) -> Option<DeadReason> {
    assert!(attempt >= 1, "a reserved job has been reserved at least once");
    if variant != Variant::NoAttemptLimit && attempt > policy.max_attempts {
        Some(DeadReason::AttemptsExhausted)
    } else {
        None
    }
}

/// The decision after attempt number `attempt` (1-based) failed with `failure`.
pub fn on_failure(
    policy: &RetryPolicy,
    variant: Variant,
    attempt: u32,
    failure: Failure,
    rng: &mut fastrand::Rng,
) -> Decision {
    assert!(attempt >= 1, "attempts are counted from 1");
    let failure = if variant == Variant::NoPoisonDetection { Failure::Transient } else { failure };
    match failure {
        Failure::Malformed => return Decision::DeadLetter(DeadReason::MalformedPayload),
        Failure::Permanent => return Decision::DeadLetter(DeadReason::PermanentError),
        Failure::Transient => {}
    }
    if variant != Variant::NoAttemptLimit && attempt >= policy.max_attempts {
        return Decision::DeadLetter(DeadReason::AttemptsExhausted);
    }
    let retry = attempt - 1;
    let backoff = match variant {
        Variant::UncappedBackoff => Backoff { cap_secs: u32::MAX, ..policy.backoff },
        _ => policy.backoff,
    };
    let ceiling_secs = backoff.ceiling(retry);
    let delay_secs = backoff.delay(retry, rng);
    Decision::Retry { delay_secs, ceiling_secs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(max_attempts: u32, base: u32, cap: u32) -> RetryPolicy {
        RetryPolicy::new(max_attempts, base, cap).expect("a valid policy")
    }

    #[test]
    fn ceilings_double_then_stop_at_the_cap() {
        let backoff = Backoff { base_secs: 1, cap_secs: 4 };
        let ceilings: Vec<u32> = (0..6).map(|r| backoff.ceiling(r)).collect();
        assert_eq!(ceilings, [1, 2, 4, 4, 4, 4]);
        assert_eq!(backoff.ceiling(u32::MAX), 4, "no overflow for absurd retry numbers");
        assert_eq!(Backoff { base_secs: 3, cap_secs: 3600 }.ceiling(70), 3600);
        assert_eq!(backoff.worst_case_wait_secs(5), 1 + 2 + 4 + 4);
        assert_eq!(backoff.worst_case_wait_secs(1), 0, "one attempt never waits");
    }

    #[test]
    fn full_jitter_reaches_both_ends_of_its_window() {
        let backoff = Backoff { base_secs: 1, cap_secs: 8 };
        let mut rng = fastrand::Rng::with_seed(7);
        let draws: Vec<u32> = (0..2_000).map(|_| backoff.delay(3, &mut rng)).collect();
        assert!(draws.iter().all(|&d| d <= 8));
        for value in 0..=8 {
            let count = draws.iter().filter(|&&d| d == value).count();
            // 2000 / 9 ≈ 222 each; a draw that skipped a value or piled on one is caught.
            assert!((120..=330).contains(&count), "{value} s drawn {count} times of 2000");
        }
    }

    #[test]
    fn policies_are_checked() {
        assert_eq!(RetryPolicy::new(0, 1, 4), Err(PolicyError::MaxAttempts(0)));
        assert_eq!(RetryPolicy::new(101, 1, 4), Err(PolicyError::MaxAttempts(101)));
        assert_eq!(RetryPolicy::new(3, 5, 4), Err(PolicyError::BaseOverCap { base: 5, cap: 4 }));
        assert_eq!(RetryPolicy::new(3, 1, 3601), Err(PolicyError::Cap(3601)));
        assert!(RetryPolicy::new(3, 0, 0).is_ok(), "zero delays are allowed (retry at once)");
    }

    #[test]
    fn poison_goes_to_the_dlq_at_once_and_transient_failures_after_max_attempts() {
        let p = policy(3, 1, 4);
        let mut rng = fastrand::Rng::with_seed(1);
        let correct = Variant::Correct;
        assert_eq!(
            on_failure(&p, correct, 1, Failure::Malformed, &mut rng),
            Decision::DeadLetter(DeadReason::MalformedPayload)
        );
        assert_eq!(
            on_failure(&p, correct, 1, Failure::Permanent, &mut rng),
            Decision::DeadLetter(DeadReason::PermanentError)
        );
        assert!(matches!(on_failure(&p, correct, 1, Failure::Transient, &mut rng), Decision::Retry { .. }));
        assert!(matches!(
            on_failure(&p, correct, 2, Failure::Transient, &mut rng),
            Decision::Retry { ceiling_secs: 2, .. }
        ));
        assert_eq!(
            on_failure(&p, correct, 3, Failure::Transient, &mut rng),
            Decision::DeadLetter(DeadReason::AttemptsExhausted)
        );
        assert_eq!(on_reserve(&p, correct, 3), None);
        assert_eq!(on_reserve(&p, correct, 4), Some(DeadReason::AttemptsExhausted), "a crash loop stops");
    }

    /// The broken variants, each caught by the rule it breaks.
    #[test]
    fn each_broken_variant_breaks_its_rule() {
        let p = policy(3, 1, 4);
        let mut rng = fastrand::Rng::with_seed(2);
        let poison = on_failure(&p, Variant::NoPoisonDetection, 1, Failure::Permanent, &mut rng);
        assert!(matches!(poison, Decision::Retry { .. }), "poison is retried: {poison:?}");
        let forever = on_failure(&p, Variant::NoAttemptLimit, 50, Failure::Transient, &mut rng);
        assert!(matches!(forever, Decision::Retry { ceiling_secs: 4, .. }), "never dead-lettered: {forever:?}");
        assert_eq!(on_reserve(&p, Variant::NoAttemptLimit, 50), None);
        let uncapped = on_failure(&p, Variant::UncappedBackoff, 2, Failure::Transient, &mut rng);
        assert!(matches!(uncapped, Decision::Retry { ceiling_secs: 2, .. }), "below the cap it agrees");
        let late = policy(10, 1, 4);
        let uncapped = on_failure(&late, Variant::UncappedBackoff, 8, Failure::Transient, &mut rng);
        assert!(
            matches!(uncapped, Decision::Retry { ceiling_secs, .. } if ceiling_secs > late.backoff.cap_secs),
            "the cap check catches it: {uncapped:?}"
        );
    }

    proptest! {
        /// Every retry the correct scheduler asks for is inside its full-jitter window,
        /// and that window is never wider than the cap.
        #[test]
        fn every_delay_is_within_its_window(
            max_attempts in 1u32..=MAX_ATTEMPTS_LIMIT,
            base in 0u32..=60,
            extra in 0u32..=600,
            attempt in 1u32..=MAX_ATTEMPTS_LIMIT,
            seed in any::<u64>(),
        ) {
            let p = policy(max_attempts, base, base + extra);
            let mut rng = fastrand::Rng::with_seed(seed);
            match on_failure(&p, Variant::Correct, attempt, Failure::Transient, &mut rng) {
                Decision::Retry { delay_secs, ceiling_secs } => {
                    prop_assert!(attempt < max_attempts);
                    let expected = (u64::from(base) << (attempt - 1).min(40)).min(u64::from(base + extra));
                    prop_assert_eq!(u64::from(ceiling_secs), expected);
                    prop_assert!(delay_secs <= ceiling_secs && ceiling_secs <= p.backoff.cap_secs);
                }
                Decision::DeadLetter(reason) => {
                    prop_assert!(attempt >= max_attempts);
                    prop_assert_eq!(reason, DeadReason::AttemptsExhausted);
                }
            }
        }
    }
}
