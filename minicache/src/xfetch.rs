//! XFetch: probabilistic early recomputation, so a hot key is reloaded shortly *before*
//! it expires, by one reader, instead of by every reader at the moment it expires.
//!
//! From Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache Stampede
//! Prevention" (VLDB 2015). A read at time `now` of an entry that expires at `expiry`
//! recomputes the value early when
//!
//! ```text
//! now - δ · β · ln(rand()) >= expiry        rand() uniform in (0, 1]
//! ```
//!
//! where δ is how long the value took to compute and β > 0 tunes eagerness (1 is the
//! paper's choice and optimal in its model; above 1 recomputes earlier). Since
//! `-ln(rand())` is exponentially distributed with mean 1, the condition holds with
//! probability
//!
//! ```text
//! P(early) = P(-ln(rand()) >= remaining / (δβ)) = exp(-remaining / (δ · β))
//! ```
//!
//! with `remaining = expiry - now`. Far from expiry that is ~0; within a few δ of it, it
//! climbs to 1. Expensive values (large δ) start refreshing earlier, which is the point:
//! the refresh has to finish before the entry is gone. With many readers, the first read
//! that draws "early" triggers the refresh and the rest keep getting the cached value.
//!
//! The cache measures δ **per entry**: the loading layer times each load with the cache's
//! clock and the core stores it with the entry (`insert_loaded`). An entry that was
//! `insert`ed rather than loaded has δ = 0, so XFetch never fires for it.
//!
//! The random source is a trait ([`RandomSource`]) so tests can make the draws
//! reproducible with a seed ([`SeededRandom`]); the default ([`ThreadRandom`]) draws from
//! a per-thread generator, so readers on different threads never share a lock.
//!
//! Left out: the paper's refinement of sampling δ from recent loads (the latest one is
//! kept), and any coupling of β to load (β is fixed per cache).

use std::fmt;
use std::sync::Arc;

use crate::clock::Nanos;

/// A source of uniform random numbers in (0, 1] — never 0, whose logarithm is `-inf`.
pub trait RandomSource: Send + Sync + fmt::Debug {
    /// A uniform draw from (0, 1].
    fn next_unit(&self) -> f64;
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit state stepped by a constant and
/// scrambled. Statistically fine for deciding refreshes, not for anything secret. Written
/// out here (eight lines) rather than pulling in a crate for it.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: the top 53 bits, plus one, over 2^53.
    fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// Draws from a per-thread generator seeded from std's per-process random hash keys, so
/// readers on different threads never share a lock. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl RandomSource for ThreadRandom {
    fn next_unit(&self) -> f64 {
        use std::cell::RefCell;
        use std::hash::{BuildHasher, Hasher};
        thread_local! {
            static GENERATOR: RefCell<SplitMix64> = RefCell::new(SplitMix64 {
                // `RandomState` is seeded from the OS once per process and varies per
                // instance; hashing the thread id in keeps two threads apart for sure.
                state: {
                    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                    hasher.write(format!("{:?}", std::thread::current().id()).as_bytes());
                    hasher.finish()
                },
            });
        }
        GENERATOR.with(|generator| generator.borrow_mut().next_unit())
    }
}

/// A seeded generator behind a lock: the same seed gives the same draws, in the order
/// they are asked for. For tests (concurrent readers contend on the lock).
#[derive(Debug)]
pub struct SeededRandom {
    generator: parking_lot::Mutex<SplitMix64>,
}

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        SeededRandom { generator: parking_lot::Mutex::new(SplitMix64 { state: seed }) }
    }
}

impl RandomSource for SeededRandom {
    fn next_unit(&self) -> f64 {
        self.generator.lock().next_unit()
    }
}

/// A β that XFetch cannot use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XFetchError {
    /// β must be a finite number above zero.
    BetaOutOfRange(f64),
}

impl fmt::Display for XFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XFetchError::BetaOutOfRange(beta) => write!(
                f,
                "XFetch's beta must be a finite number above 0, got {beta}; use 1.0 (the paper's choice), \
                 or more to refresh earlier"
            ),
        }
    }
}

impl std::error::Error for XFetchError {}

/// XFetch's settings: β and where the random draws come from.
#[derive(Debug, Clone)]
pub struct XFetch {
    /// Eagerness: the early-refresh window scales with δ·β.
    beta: f64,
    /// Shared by every reader of the cache; an `Arc` because the builder's settings are
    /// cloned into the cache.
    random: Arc<dyn RandomSource>,
}

impl Default for XFetch {
    /// β = 1 with [`ThreadRandom`].
    fn default() -> Self {
        XFetch { beta: 1.0, random: Arc::new(ThreadRandom) }
    }
}

impl XFetch {
    /// XFetch with this β (finite, above 0) and [`ThreadRandom`].
    pub fn new(beta: f64) -> Result<Self, XFetchError> {
        if !(beta.is_finite() && beta > 0.0) {
            return Err(XFetchError::BetaOutOfRange(beta));
        }
        Ok(XFetch { beta, random: Arc::new(ThreadRandom) })
    }

    /// The same settings drawing from `random` (e.g. a [`SeededRandom`] in a test).
    pub fn with_random(self, random: impl RandomSource + 'static) -> Self {
        XFetch { random: Arc::new(random), ..self }
    }

    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// Decides one read: `true` means "recompute now, before `expires_at`". Draws one
    /// random number. `delta_nanos` is how long the entry's value took to compute.
    pub fn should_recompute_early(&self, now: Nanos, expires_at: Nanos, delta_nanos: u64) -> bool {
        let Some(remaining) = expires_at.checked_sub(now) else {
            return true; // already expired: nothing to decide
        };
        let draw = self.random.next_unit();
        debug_assert!(draw > 0.0 && draw <= 1.0, "a RandomSource must draw from (0, 1], drew {draw}");
        // `now - δβ·ln(r) >= expiry`, rearranged to `-δβ·ln(r) >= remaining` so that the
        // comparison is between two small numbers: an absolute `now` in f64 would lose
        // nanosecond precision after ~104 days of uptime.
        let early_by = -(delta_nanos as f64) * self.beta * draw.ln();
        early_by >= remaining as f64
    }

    /// The probability that one read recomputes early, `exp(-remaining / (δ·β))`: what
    /// [`XFetch::should_recompute_early`] does on average. For tests and for reasoning.
    pub fn early_probability(&self, remaining_nanos: u64, delta_nanos: u64) -> f64 {
        if remaining_nanos == 0 {
            return 1.0;
        }
        if delta_nanos == 0 {
            return 0.0;
        }
        (-(remaining_nanos as f64) / (delta_nanos as f64 * self.beta)).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that always draws the same number, to pin the formula down exactly.
    #[derive(Debug)]
    struct Fixed(f64);

    impl RandomSource for Fixed {
        fn next_unit(&self) -> f64 {
            self.0
        }
    }

    #[test]
    fn beta_must_be_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = XFetch::new(bad).err();
            assert!(matches!(error, Some(XFetchError::BetaOutOfRange(_))), "beta {bad} must be refused");
        }
        assert!(XFetch::new(1.0).is_ok());
        let message = XFetch::new(0.0).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("above 0"), "{message}");
    }

    #[test]
    fn the_decision_is_the_papers_inequality() {
        // δ = 100, β = 1, draw e^-1: early by exactly 100 ns, so it fires at remaining <= 100.
        let draw = (-1.0f64).exp();
        let xfetch = XFetch::default().with_random(Fixed(draw));
        assert!(xfetch.should_recompute_early(1_000 - 99, 1_000, 100));
        assert!(!xfetch.should_recompute_early(1_000 - 101, 1_000, 100));
        // β = 2 doubles the window.
        let eager = XFetch::new(2.0).map(|x| x.with_random(Fixed(draw)));
        assert!(eager.is_ok_and(|x| x.should_recompute_early(1_000 - 199, 1_000, 100)));
    }

    #[test]
    fn a_draw_of_one_never_fires_before_expiry_and_expired_always_fires() {
        let xfetch = XFetch::default().with_random(Fixed(1.0));
        assert!(!xfetch.should_recompute_early(999, 1_000, 1_000_000));
        assert!(xfetch.should_recompute_early(1_000, 1_000, 0));
        assert!(xfetch.should_recompute_early(2_000, 1_000, 0));
    }

    #[test]
    fn without_a_measured_load_time_it_never_fires_early() {
        let xfetch = XFetch::default().with_random(Fixed(f64::MIN_POSITIVE));
        assert!(!xfetch.should_recompute_early(0, 1, 0));
        assert_eq!(xfetch.early_probability(1, 0), 0.0);
    }

    #[test]
    fn the_generator_is_uniform_enough() {
        // 100,000 draws into 10 bins: each bin expects 10,000 with a standard deviation
        // of sqrt(100000 * 0.1 * 0.9) = 95; 6 standard deviations is +-570.
        let random = SeededRandom::new(42);
        let mut bins = [0u32; 10];
        for _ in 0..100_000 {
            let x = random.next_unit();
            bins[((x * 10.0).ceil() as usize).clamp(1, 10) - 1] += 1;
        }
        for (bin, count) in bins.iter().enumerate() {
            assert!((9_430..=10_570).contains(count), "bin {bin} got {count} of 100000 draws: {bins:?}");
        }
        let threaded = ThreadRandom;
        assert!((0..1_000).map(|_| threaded.next_unit()).all(|x| x > 0.0 && x <= 1.0));
    }

    #[test]
    fn seeded_draws_repeat_and_stay_in_the_unit_interval() {
        let a = SeededRandom::new(7);
        let b = SeededRandom::new(7);
        for _ in 0..1_000 {
            let x = a.next_unit();
            assert!(x > 0.0 && x <= 1.0);
            assert_eq!(x, b.next_unit());
        }
    }
}
